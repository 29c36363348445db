import sys

from tests.fleet.drill import main

sys.exit(main())
