from examples.calendar_mcp.server import main

main()
