"""Scans in and scans made: TIFF volumes and time steps (:mod:`.io`), intensity normalisation (:mod:`.normalise`),
the simulated tomograph (:mod:`.tomography`) and the demo experiment with known truth (:mod:`.synthetic`)."""
