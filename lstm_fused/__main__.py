"""`python -m lstm_fused`: the version, the build and what can run here (show_config())."""

from .info import show_config

if __name__ == "__main__":
    show_config()
