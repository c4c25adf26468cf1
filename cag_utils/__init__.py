"""cag_utils: the tested code behind the CAG-VLM compendium notebooks."""
