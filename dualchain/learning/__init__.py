"""Pure learning code: models, datasets, partitioning, parameter codec, aggregation rules."""
