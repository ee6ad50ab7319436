import sys

from bridge.devices.midi.jackmidi import main

sys.exit(main(sys.argv[1:]))
