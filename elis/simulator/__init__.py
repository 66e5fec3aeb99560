"""The discrete-event simulator of the service: same policies, an engine cost model, predictor error models."""
