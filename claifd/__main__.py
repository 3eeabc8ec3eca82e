from claifd.cli import main

raise SystemExit(main())
