import sys

from buildhub_cli.cli import main

sys.exit(main())
