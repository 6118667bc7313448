import sys

from cloudtune.cli import main

sys.exit(main())
