"""The library main.py composes (see README, "How the code is laid out")."""
import logging

# bitsandbytes on AVX512-BF16 CPUs reports at import that an optional kernel from the Hugging Face
# hub is missing and falls back to its built-in one, which is what we want offline. The package
# quiets it before any of its modules can import bitsandbytes (through peft or transformers).
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
