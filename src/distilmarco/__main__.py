import sys

from distilmarco.cli import main

sys.exit(main())
