"""Builders of the offline mini-VTAB image sets, one module per source (entry point: `shiplib.data.mini_vtab`)."""
