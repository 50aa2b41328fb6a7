"""Using a trained checkpoint: load it (:mod:`.checkpoint`), evaluate and predict with it, export it
(:mod:`.export`); the image files it reads (:mod:`.images`), its metrics (:mod:`.metrics`) and the
temperature and calibration error of its probabilities (:mod:`.calibration`)."""
