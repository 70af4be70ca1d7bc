"""The Ray Serve application, HTTP API, settings, serve configs, and the `coe` CLI root."""
