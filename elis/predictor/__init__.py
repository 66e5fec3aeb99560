"""The response-length predictor: a frozen FlagEmbedding encoder plus an MLP head (ELIS), trained offline and
served in batches. Import the submodules (`serving`, `training`, ...) directly; this package imports nothing
heavy."""
