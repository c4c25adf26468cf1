"""Synthetic coronary angiography exams: lesions, images and the clinical text that goes with them."""
