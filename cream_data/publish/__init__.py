"""Publishing to the Hugging Face Hub: dataset folder and card."""
