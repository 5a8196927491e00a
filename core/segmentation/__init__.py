"""A segmented time series: every step with one model, locally or on Dask (:mod:`.series`), cleaning
(:mod:`.postprocess`), scores against a reference (:mod:`.metrics`) and the Segment/Evaluate figures (:mod:`.seg_charts`)."""
