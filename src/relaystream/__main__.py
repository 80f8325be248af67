from relaystream.cli import main

raise SystemExit(main())
