"""cag_utils: the tested code behind the CAG-VLM compendium notebooks."""
from cag_utils.cpukernels import pin as _pin_cpu_kernels

_pin_cpu_kernels()   # before any torch work: one CPU kernel set on every x86 machine (cag_utils.cpukernels)
