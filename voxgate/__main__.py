from voxgate.server.cli import main

raise SystemExit(main())
