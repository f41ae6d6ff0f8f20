from nes.cli import main

raise SystemExit(main())
