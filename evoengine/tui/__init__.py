"""The Textual archive browser (``evo browse``). ``queries``, ``filters``, ``source`` and
``render`` have no Textual import; ``app``, ``widgets`` and ``screens`` do."""
