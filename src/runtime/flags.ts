// Each command's flags, declared once: name, type, default, environment variable and description. Parsing
// (Node's util.parseArgs), checking each value, and `--help` all come from that one table.
import { parseArgs } from 'node:util';
import { durationMs } from './duration.ts';

export interface Flag {
  /** `integer` and `port` are whole numbers; `duration` is Go-style (30s, 5m) and parses to milliseconds. */
  type: 'string' | 'boolean' | 'integer' | 'port' | 'duration';
  description: string;
  /** The value's placeholder in `--help`, such as FILE or URL. */
  value?: string;
  default?: string | boolean;
  /** Environment variable read when the flag is not given. */
  env?: string;
  short?: string;
  multiple?: boolean;
  required?: boolean;
  /** Smallest accepted value of an `integer` flag. */
  min?: number;
  /** The only values a `string` flag accepts. */
  choices?: readonly string[];
}

export interface Command {
  name: string;
  summary: string;
  /** What follows `hookyard <name>` in the usage line, such as `<provider> --url URL`. */
  usage?: string;
  flags: Record<string, Flag>;
  /** Lines after the flags in `--help`: examples, notes. */
  notes?: string;
}

type Parsed<F extends Flag> = F extends { multiple: true }
  ? string[]
  : F['type'] extends 'boolean'
    ? boolean
    : F['type'] extends 'integer' | 'port' | 'duration'
      ? number
      : string;
type Known<F extends Flag> = F extends
  | { default: unknown }
  | { required: true }
  | { multiple: true }
  | { type: 'boolean' }
  ? Parsed<F>
  : Parsed<F> | undefined;
export type FlagValues<T extends Record<string, Flag>> = { [K in keyof T]: Known<T[K]> };

/** A command line that cannot run as written: the message says which word is wrong and what to type instead. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/**
 * Parses `args` for `command`. With `--help` or `-h` it prints the help to stdout and returns undefined; a bad
 * flag or value throws a UsageError that names the flag.
 */
export function parseFlags<C extends Command>(
  command: C,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): { values: FlagValues<C['flags']>; positionals: string[] } | undefined {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(helpText(command));
    return undefined;
  }
  const options = Object.fromEntries(
    Object.entries(command.flags).map(([name, f]) => [
      name,
      {
        type: f.type === 'boolean' ? ('boolean' as const) : ('string' as const),
        ...(f.short ? { short: f.short } : {}),
        ...(f.multiple ? { multiple: true } : {}),
      },
    ]),
  );
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args, options, allowPositionals: command.usage !== undefined, allowNegative: true });
  } catch (err) {
    throw new UsageError(`${describeParseError(err as Error & { code?: string })}; ${seeHelp(command)}`);
  }
  const values: Record<string, unknown> = {};
  for (const [name, flag] of Object.entries(command.flags)) {
    const given = parsed.values[name];
    const raw = given ?? (flag.env ? envValue(flag, env[flag.env]) : undefined) ?? flag.default;
    if (raw === undefined) {
      if (flag.required) throw new UsageError(`--${name} is required: ${flag.description}; ${seeHelp(command)}`);
      values[name] = flag.multiple ? [] : flag.type === 'boolean' ? false : undefined;
      continue;
    }
    values[name] = Array.isArray(raw) || typeof raw === 'boolean' ? raw : convert(name, flag, raw);
  }
  return { values: values as FlagValues<C['flags']>, positionals: parsed.positionals };
}

function envValue(flag: Flag, text: string | undefined): string | boolean | undefined {
  if (text === undefined || text === '') return undefined;
  return flag.type === 'boolean' ? text === 'true' || text === '1' : text;
}

function convert(name: string, flag: Flag, text: string): string | number {
  const example = flag.default !== undefined ? ` --${name} ${flag.default}` : '';
  switch (flag.type) {
    case 'integer':
    case 'port': {
      const n = /^[0-9]+$/.test(text) ? Number(text) : Number.NaN;
      const min = flag.type === 'port' ? 0 : (flag.min ?? 0);
      const max = flag.type === 'port' ? 65535 : Number.MAX_SAFE_INTEGER;
      if (!Number.isSafeInteger(n) || n < min || n > max) {
        const range = flag.type === 'port' ? 'a port from 0 to 65535' : `a whole number of at least ${min}`;
        throw new UsageError(`--${name} "${text}" is not ${range}; type for example${example || ` --${name} ${min}`}`);
      }
      return n;
    }
    case 'duration':
      try {
        return durationMs(text);
      } catch {
        throw new UsageError(
          `--${name} "${text}" is not a duration such as 500ms, 30s, 5m or 1h30m; type for example${example || ` --${name} 30s`}`,
        );
      }
    default:
      if (flag.choices && !flag.choices.includes(text)) {
        throw new UsageError(
          `--${name} "${text}" is not one of ${flag.choices.join(', ')}; type for example${example}`,
        );
      }
      return text;
  }
}

function describeParseError(err: Error & { code?: string }): string {
  const option = /'(-[^' ]*)/.exec(err.message)?.[1];
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown flag ${option}`;
  if (err.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL')
    return `unexpected argument ${/'([^']*)'/.exec(err.message)?.[1]}`;
  if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    return /argument missing/.test(err.message) ? `${option ?? 'a flag'} needs a value` : err.message;
  }
  return err.message;
}

const seeHelp = (command: Command) => `hookyard ${command.name} --help lists the flags`;

const helpWidth = 110;

/** Words of `text` in lines of at most `width` characters (a longer word gets a line of its own). */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  for (const word of text.split(' ')) {
    const last = lines.at(-1);
    if (last !== undefined && last.length + 1 + word.length <= width) lines[lines.length - 1] = `${last} ${word}`;
    else lines.push(word);
  }
  return lines;
}

/** The `--help` text: usage, summary, then one line per flag with its default and environment variable. */
export function helpText(command: Command): string {
  const rows = Object.entries(command.flags).map(([name, f]) => {
    const negated = f.type === 'boolean' && f.default === true;
    const names = `${f.short ? `-${f.short}, ` : '    '}--${negated ? `no-${name}` : name}`;
    const value = f.type === 'boolean' ? '' : ` ${f.value ?? f.type.toUpperCase()}`;
    const extras = [
      f.required ? 'required' : undefined,
      f.choices ? `one of ${f.choices.join(', ')}` : undefined,
      f.default !== undefined && f.type !== 'boolean' ? `default ${f.default}` : undefined,
      f.env ? `env ${f.env}` : undefined,
      f.multiple ? 'repeatable' : undefined,
    ].filter(Boolean);
    return [`${names}${value}`, `${f.description}${extras.length > 0 ? ` (${extras.join(', ')})` : ''}`];
  });
  rows.push(['-h, --help', 'show this help']);
  const width = Math.max(...rows.map(([left]) => (left as string).length)) + 2;
  const lines = rows.map(([left, right]) =>
    wrap(right as string, helpWidth - width - 2)
      .map((text, i) => `  ${(i === 0 ? (left as string) : '').padEnd(width)}${text}`)
      .join('\n'),
  );
  const usage = `usage: hookyard ${command.name}${command.usage ? ` ${command.usage}` : ''} [flags]`;
  return `${usage}\n\n${command.summary}\n\nflags:\n${lines.join('\n')}\n${command.notes ? `\n${command.notes}\n` : ''}`;
}
