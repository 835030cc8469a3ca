import sys

from dissect_core.cli import main

sys.exit(main())
