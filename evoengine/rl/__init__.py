"""Fine-tuning the local mutation model on what the search found.

``archive_data`` reads the proposals of a run; ``rewards`` classifies and scores them;
``datasets`` makes DPO pairs, GRPO groups and SFT rows (``evo export``); ``training``
fits a LoRA adapter with TRL and PEFT (``evo train``); ``schedule`` trains in the loop
and hands each adapter to the running vLLM engine. See ``docs/rl.md``.
"""
