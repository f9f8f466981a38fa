"""Every benchmark, one place: ``invoke bench NAME`` runs ``bench.NAME.main(runs)``. They share
one harness (bench/harness.py) and may use any product package and harness; nothing imports them."""
