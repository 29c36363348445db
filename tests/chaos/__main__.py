import sys

from tests.chaos.drill import main

sys.exit(main())
