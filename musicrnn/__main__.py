"""Allow ``python -m musicrnn``."""

from musicrnn.cli import main

if __name__ == "__main__":
    main()
