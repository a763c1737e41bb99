"""The service layer: command line now; the HTTP server and dashboard come later."""
