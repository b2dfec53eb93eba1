"""minituner: LoRA for PyTorch, written by you, one lab at a time.

This file is given code. It imports nothing on purpose: a mistake in one lab file must not
stop the other labs' modules from importing. Import what you need from the submodules:

    from minituner.lora import LoRALinear
"""
