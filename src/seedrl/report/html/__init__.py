"""Self-contained HTML reports: the page builder (:mod:`.page`) and its sections (:mod:`.runs`, ...)."""
