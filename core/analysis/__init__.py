"""From phase volumes to science: the internal standard (:mod:`.stoichiometry`), pores (:mod:`.pores`), kinetics
(:mod:`.kinetics`), the analysis with its verdict and report (:mod:`.results`), its figures (:mod:`.analysis_charts`)
and their static images (:mod:`.export`)."""
