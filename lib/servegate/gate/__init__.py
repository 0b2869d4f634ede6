"""The image-bump gate: image_bump.py sequences the steps, steps.py calls the library for each one,
pins.py / flags.py hold the pin rules and the in-process flag check, junit.py and summary.py the outputs,
cli.py the `servegate gate` verb."""
