"""A device over SSH (``--host``): the system ssh client, the bundle's copy on the device,
and what bench, eval, build and verify do there."""
