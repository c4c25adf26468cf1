"""``python -m cag_utils.cnn`` / ``accelerate launch -m cag_utils.cnn``: train from files."""
from cag_utils.cnn.train import main

main()
