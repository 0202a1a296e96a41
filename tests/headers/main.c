/* Links the per-header translation units; compiling them is the test. */
#include <stdio.h>

int main(void)
{
    puts("every public header compiles on its own");
    return 0;
}
