/** commander helpers shared by the commands */

/** a repeatable option: each occurrence appended */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
