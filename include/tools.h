/*
 * tools.h — operator and test subcommands of the execd binary
 * (`execd <tool> …`), run instead of the service.
 */
#ifndef EXECD_TOOLS_H
#define EXECD_TOOLS_H

struct config;

/* `execd bus-publish …`: publishes test events; see src/tools/bus_tool.c. */
int tool_bus_main(const struct config *cfg, int argc, char **argv);

#endif
