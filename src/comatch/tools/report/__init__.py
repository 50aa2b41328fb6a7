"""The report of a run and the comparison of several runs: writing them (:mod:`.build`), the HTML
page (:mod:`.html`), the trust sections (:mod:`.trust`), the figures (:mod:`.plots`), and the kNN
accuracy of the learned embeddings (:mod:`.representation`, which the accuracy benchmark compares
runs by)."""
