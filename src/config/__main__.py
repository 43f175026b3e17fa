"""``python -m src.config --reference docs/CONFIG.md``: write the configuration reference."""

import sys

from src.config.reference import main

sys.exit(main())
