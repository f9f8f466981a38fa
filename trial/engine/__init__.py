"""What mmengine's Runner runs inside the container: the Determined hook, ranks, the resumable loop
and samplers, the node-cached dataset, the metric and the visualization hook. Imports only staging
(the cache it writes parsed annotations with), errors and common (docs/architecture.md)."""
