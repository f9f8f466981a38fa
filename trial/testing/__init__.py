"""Test harnesses for the trial (namespaced nodes, the COCO-scale generator, which COCO sample
to use). Never imported by product code; never shipped (the wheel and the Determined context leave
every testing/ folder out)."""
