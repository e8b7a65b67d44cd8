import { CelScalar, celEnv, isCelError, mapType, parse, plan } from '@bufbuild/cel';
import { strings } from '@bufbuild/cel/ext';
import { compiledOnce } from '../runtime/re2.ts';

/** What a subscription filter sees of an event. */
export interface FilterInput {
  type: string;
  headers: Record<string, string>;
  body: unknown;
}

export class FilterCompileError extends Error {
  override name = 'FilterCompileError';
}

const variables = ['type', 'headers', 'body'] as const;

const env = celEnv({
  variables: {
    type: CelScalar.STRING,
    headers: mapType(CelScalar.STRING, CelScalar.STRING),
    body: CelScalar.DYN,
  },
  funcs: strings,
  re2: compiledOnce,
});

type Expr = ReturnType<typeof parse>['expr'];

export type Filter = (input: FilterInput) => boolean;

/**
 * Compiles a CEL filter once. Besides syntax, it refuses names the filter cannot mean (a variable other than
 * type, headers and body, or an unknown function), which CEL would otherwise only report when an event arrives.
 * The compiled filter is true only when the expression evaluates to true; an evaluation error (such as a field
 * the body lacks) counts as false.
 */
export function compileFilter(expression: string): Filter {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(expression);
  } catch (err) {
    throw new FilterCompileError(`filter is not valid CEL: ${firstLine(err)}`);
  }
  checkNames(parsed.expr, new Set(variables));
  const program = plan(env, parsed);
  return (input) => {
    const result = program({ type: input.type, headers: input.headers as never, body: input.body as never });
    return !isCelError(result) && result === true;
  };
}

/** A compiled ordering key: the key of an event, or undefined when it has none (see compileOrderingKey). */
export type KeyFunction = (input: FilterInput) => string | undefined;

/**
 * Compiles a CEL expression that names an event's ordering key, such as `body.order.id`. A string, integer or
 * unsigned result is the key (numbers as their decimal text, so 42 and "42" are one key); anything else, or an
 * evaluation error (a field the body lacks), means the event has no key.
 */
export function compileOrderingKey(expression: string): KeyFunction {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(expression);
  } catch (err) {
    throw new FilterCompileError(`ordering.key is not valid CEL: ${firstLine(err)}`);
  }
  try {
    checkNames(parsed.expr, new Set(variables));
  } catch (err) {
    throw new FilterCompileError((err as Error).message.replace(/^filter/, 'ordering.key'));
  }
  const program = plan(env, parsed);
  return (input) => {
    const result = program({ type: input.type, headers: input.headers as never, body: input.body as never });
    if (typeof result === 'string') return result;
    if (typeof result === 'bigint') return result.toString();
    if (typeof result === 'number' && Number.isInteger(result)) return String(result);
    // CEL's uint is a wrapper object around a bigint
    const value = (result as { value?: unknown } | null)?.value;
    return typeof value === 'bigint' ? value.toString() : undefined;
  };
}

function checkNames(expr: Expr | undefined, scope: Set<string>): void {
  if (!expr) return;
  const kind = expr.exprKind;
  switch (kind.case) {
    case 'identExpr':
      if (!scope.has(kind.value.name)) {
        throw new FilterCompileError(
          `filter refers to unknown name "${kind.value.name}"; it can use ${variables.join(', ')}`,
        );
      }
      return;
    case 'selectExpr':
      checkNames(kind.value.operand, scope);
      return;
    case 'callExpr': {
      const name = kind.value.function;
      if (!/^[_@!-]/.test(name) && !env.funcs.find(name)) {
        throw new FilterCompileError(`filter calls unknown function "${name}"`);
      }
      checkNames(kind.value.target, scope);
      for (const arg of kind.value.args) checkNames(arg, scope);
      return;
    }
    case 'listExpr':
      for (const element of kind.value.elements) checkNames(element, scope);
      return;
    case 'structExpr':
      for (const entry of kind.value.entries) {
        if (entry.keyKind.case === 'mapKey') checkNames(entry.keyKind.value, scope);
        checkNames(entry.value, scope);
      }
      return;
    case 'comprehensionExpr': {
      const c = kind.value;
      checkNames(c.iterRange, scope);
      checkNames(c.accuInit, scope);
      const inner = new Set([...scope, c.iterVar, c.iterVar2, c.accuVar].filter(Boolean));
      checkNames(c.loopCondition, inner);
      checkNames(c.loopStep, inner);
      checkNames(c.result, inner);
      return;
    }
    default:
      return;
  }
}

function firstLine(err: unknown): string {
  return String(err instanceof Error ? err.message : err).split('\n')[0] ?? '';
}
