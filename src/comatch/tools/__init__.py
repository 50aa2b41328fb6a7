"""What uses a finished run, by concern: :mod:`.inference` (a trained checkpoint: load, evaluate,
predict, export, its calibration), :mod:`.trust` (what to label next, what does not belong, how far
to trust: ``suggest``, ``label``, ``calibrate``), :mod:`.baseline` (classifiers on frozen features
and pixels beside the run) and :mod:`.report` (the report of a run, the comparison of runs). At the
top sits what every command shares (:mod:`.arguments`, :mod:`.outputs`, :mod:`.quiet`) and
:mod:`.commands`, the subcommands ``evaluate``, ``predict``, ``export``, ``report`` and ``baseline``,
which adds those of :mod:`.trust.commands`."""
