"""What a user can choose, declared without importing torch: every registry (named models,
probe sets, CLIP models, similarity functions, pool modes, decoders, concept sets, concept
sources, layer layouts) and ``DescribeConfig``. The CLI's flags and help, the app's pickers
and the docs are generated from here; implementations are resolved on first use."""
