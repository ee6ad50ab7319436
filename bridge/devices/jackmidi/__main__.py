import sys

from bridge.devices.jackmidi import main

sys.exit(main(sys.argv[1:]))
