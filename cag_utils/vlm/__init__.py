"""Stage 3: LoRA fine-tuning of vision-language models (notebook 05).

One concern a module:
- ``tokenizer``: the smoke tokenizer, trained on a text-only report corpus drawn from the generator;
- ``standins``: the smoke stand-ins of the pretrained parts (Gemma-family LM, SigLIP, ConceptCLIP),
  each trained here and cached by a hash of its config and data;
- ``build``: the registry of the three model families, their assembly from stand-ins (smoke) and
  their loading from local checkpoints (paper);
- ``data``: prompts, bad-input rules and encoding; ``collate``: the padding collator (torch only);
- ``lora``: LoRA through peft and the Hugging Face Trainer;
- ``generate``: batched greedy decoding, held-out losses and the image-reliance measure;
- ``stage``: the glue between a profile's ``finetune`` section and the modules above.
"""

import warnings as _warnings

from transformers.utils import logging as _hf_logging

# Notebook outputs must hold no machine paths: transformers' load reports (expected here: the
# text half of a SigLIP folder is unused by the vision tower) and its deprecation warnings name
# absolute cache and site-packages paths. Errors still show.
_hf_logging.set_verbosity_error()
_warnings.filterwarnings("ignore", message=r".*(gradient|activation)_checkpointing.*", category=FutureWarning)
