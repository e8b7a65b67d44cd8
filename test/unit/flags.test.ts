// Flags: each command's table gives the parsing, the checks of every value, and --help.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import * as commands from '../../src/commands.ts';
import { type Command, helpText, parseFlags, UsageError } from '../../src/runtime/flags.ts';

const command = {
  name: 'example',
  summary: 'An example command.',
  flags: {
    workers: { type: 'integer', min: 1, default: '4', description: 'reconciles at once' },
    port: { type: 'port', default: '8080', description: 'where to listen' },
    interval: { type: 'duration', default: '30s', description: 'how often' },
    url: { type: 'string', value: 'URL', env: 'EXAMPLE_URL', description: 'where to connect' },
    format: { type: 'string', choices: ['text', 'json'], default: 'text', description: 'log format' },
    election: { type: 'boolean', default: true, description: 'elect a leader' },
  },
} as const satisfies Command;

const parse = (args: string[], env: NodeJS.ProcessEnv = {}) => {
  const parsed = parseFlags(command, args, env);
  assert.ok(parsed);
  return parsed.values;
};

describe('flags', () => {
  it('gives the defaults, typed, when nothing is passed', () => {
    assert.deepEqual(parse([]), {
      workers: 4,
      port: 8080,
      interval: 30_000,
      url: undefined,
      format: 'text',
      election: true,
    });
  });

  it('reads every whole number as itself, and refuses anything else naming the flag and what to type', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), (n) => {
        assert.equal(parse(['--workers', String(n)]).workers, n);
      }),
    );
    fc.assert(
      fc.property(
        fc.string().filter((s) => !/^[0-9]+$/.test(s) || Number(s) < 1),
        (text) => {
          assert.throws(
            () => parse([`--workers=${text}`]),
            (err: unknown) =>
              err instanceof UsageError && err.message.includes('--workers') && err.message.includes('--workers 4'),
          );
        },
      ),
    );
  });

  it('checks ports and durations', () => {
    assert.throws(() => parse(['--port', '65536']), /--port "65536" is not a port from 0 to 65535; .*--port 8080/);
    assert.equal(parse(['--interval', '1h30m']).interval, 5_400_000);
    assert.throws(() => parse(['--interval', '10']), /--interval "10" is not a duration .*--interval 30s/);
    assert.throws(() => parse(['--format', 'xml']), /--format "xml" is not one of text, json/);
  });

  it('takes a flag over its environment variable, and the variable over the default', () => {
    assert.equal(parse([], { EXAMPLE_URL: 'nats://env' }).url, 'nats://env');
    assert.equal(parse(['--url', 'nats://flag'], { EXAMPLE_URL: 'nats://env' }).url, 'nats://flag');
    assert.equal(parse(['--no-election']).election, false);
  });

  it('names an unknown flag and a flag without its value', () => {
    assert.throws(() => parse(['--wrokers', '3']), /unknown flag --wrokers; hookyard example --help lists the flags/);
    assert.throws(() => parse(['--url']), /^UsageError: --url needs a value/);
  });

  it('writes --help from the table: every flag, its default and its environment variable', () => {
    const text = helpText(command);
    assert.match(text, /^usage: hookyard example \[flags\]/);
    assert.match(text, /--workers INTEGER +reconciles at once \(default 4\)/);
    assert.match(text, /--url URL +where to connect \(env EXAMPLE_URL\)/);
    assert.match(text, /--no-election +elect a leader/);
  });

  it('describes every flag of every command', () => {
    for (const c of Object.values(commands) as Command[]) {
      for (const [name, flag] of Object.entries(c.flags))
        assert.ok(flag.description.length > 10, `${c.name} --${name}`);
    }
  });
});
