"""The split names of the NOAH/SHIP folder layout, shared by the loader, the task tables and the preparers."""

SPLITS = ("train800", "val200", "train800val200", "test")
