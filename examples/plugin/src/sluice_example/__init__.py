"""An example third-party Sluice plugin."""
