from openclaw_sup.entry import main

main()
