"""What to label next, what does not belong, how far to trust: the ranking of unlabelled images
(:mod:`.suggest`, :mod:`.scores`, over the run's pool of images, :mod:`.pool`), the labelling page
(:mod:`.label`, :mod:`.label_studio`), the outlier scores (:mod:`.ood`) and the unknown-class
screen (:mod:`.screen`), fitting a finished run's temperature (:mod:`.run_calibration`), and their
subcommands (:mod:`.commands`)."""
