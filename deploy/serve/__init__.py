"""The Ray Serve application: deployments, handles, seams, drain and watch."""
