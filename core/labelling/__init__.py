"""Labels to ground truth: pixel features (:mod:`.features`), the forest that
turns scribbles into a ground truth (:mod:`.forest`), and the threshold baseline the study replaced (:mod:`.threshold`)."""
