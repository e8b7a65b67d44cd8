import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { run } from '@bufbuild/cel';
import { RE2JS } from '@bufbuild/re2';
import fc from 'fast-check';
import { checkResource } from '../../src/api/check.ts';
import { duration } from '../../src/api/common.ts';
import { apiReference, crdFileName, crdYAML, jsonSchemaFileName, jsonSchemaText, kinds } from '../../src/api/crd.ts';
import { providerEndpoint } from '../../src/api/provider-endpoint.ts';
import { InvalidResource, parseResource } from '../../src/api/validate.ts';
import { compileFilter, FilterCompileError } from '../../src/filter/cel.ts';
import { badResources } from '../fixtures/bad-resources.ts';
import { exampleDocuments } from '../harness/examples.ts';
import { root } from '../harness/servers.ts';

describe('generated CRDs', () => {
  for (const k of kinds) {
    for (const dir of ['crds', 'charts/hookyard/crds']) {
      it(`${dir}/${crdFileName(k)} is what the generator writes (run npm run generate)`, () => {
        const committed = readFileSync(join(root, dir, crdFileName(k)), 'utf8');
        assert.ok(committed === crdYAML(k), `${dir}/${crdFileName(k)} is stale: run npm run generate`);
      });
    }
    it(`crds/schemas/${jsonSchemaFileName(k)} is what the generator writes (run npm run generate)`, () => {
      const committed = readFileSync(join(root, 'crds/schemas', jsonSchemaFileName(k)), 'utf8');
      assert.ok(
        committed === jsonSchemaText(k),
        `crds/schemas/${jsonSchemaFileName(k)} is stale: run npm run generate`,
      );
    });
  }
});

describe('docs/api.md', () => {
  it('is what the generator writes (run npm run generate)', () => {
    assert.ok(readFileSync(join(root, 'docs/api.md'), 'utf8') === apiReference(), 'docs/api.md is stale');
  });
});

describe('examples', () => {
  const docs = exampleDocuments();
  it('cover every seed provider', () => {
    const providers = docs.filter((d) => d.doc.kind === 'ProviderEndpoint').map((d) => d.doc.spec?.provider);
    assert.deepEqual(providers.sort(), ['fotoweb', 'printiq', 'proign', 'shopflix', 'siteflow']);
  });
  for (const { file, doc } of docs.filter((d) => d.doc.kind !== 'Secret')) {
    it(`${file}: ${doc.kind}/${doc.metadata.name} is valid`, () => {
      parseResource(doc);
    });
  }
});

describe('bad resources are refused by the schemas with the field and the reason', () => {
  for (const bad of badResources) {
    it(bad.name, () => {
      assert.throws(
        () => parseResource(bad.manifest),
        (err: unknown) => {
          assert.ok(err instanceof InvalidResource);
          const problem = err.problems.find((p) => p.startsWith(`${bad.field}:`));
          assert.ok(problem, `no problem names ${bad.field}: ${err.problems.join(' | ')}`);
          if (bad.message) assert.ok(problem.includes(bad.message), problem);
          return true;
        },
      );
    });
  }
});

describe('checking without the CEL rules (what a receiver does with what the API server has checked)', () => {
  const endpoint = {
    apiVersion: 'hookyard.io/v1alpha1',
    kind: 'ProviderEndpoint',
    metadata: { name: 'orders', namespace: 'shop' },
    spec: { provider: 'github', verification: [{ none: true }], stream: { replicas: 2 } },
  };
  it('leaves out only the rules: a resource that breaks one passes, and its defaults are applied', () => {
    assert.throws(() => parseResource(endpoint), /stream\.replicas must be 1, 3 or 5/);
    const parsed = checkResource(providerEndpoint, 'ProviderEndpoint', endpoint, { rules: false });
    assert.equal(parsed.spec.stream.replicas, 2);
    assert.equal(parsed.spec.stream.maxAge, '168h');
  });
  it('still refuses a resource of the wrong shape', () => {
    const wrong = { ...endpoint, spec: { ...endpoint.spec, stream: { replicas: 'two' } } };
    assert.throws(() => checkResource(providerEndpoint, 'ProviderEndpoint', wrong, { rules: false }), InvalidResource);
  });
});

describe('filters', () => {
  it('compile or fail with FilterCompileError, never anything else', () => {
    fc.assert(
      fc.property(fc.string(), (expression) => {
        try {
          compileFilter(expression);
        } catch (err) {
          assert.ok(err instanceof FilterCompileError, String(err));
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('evaluate to a boolean for any body, never throwing', () => {
    const filter = compileFilter("type == 'order.created' && body.order.total > 10 && headers['x-shop'] == 'eu'");
    fc.assert(
      fc.property(fc.string(), fc.dictionary(fc.string(), fc.string()), fc.jsonValue(), (type, headers, body) => {
        assert.equal(typeof filter({ type, headers, body }), 'boolean');
      }),
    );
  });

  it('select what they say', () => {
    const filter = compileFilter("type.startsWith('order.') && body.items.exists(i, i.qty > 1)");
    assert.equal(filter({ type: 'order.created', headers: {}, body: { items: [{ qty: 2 }] } }), true);
    assert.equal(filter({ type: 'order.created', headers: {}, body: { items: [{ qty: 1 }] } }), false);
    assert.equal(filter({ type: 'return.created', headers: {}, body: { items: [{ qty: 2 }] } }), false);
    assert.equal(filter({ type: 'order.created', headers: {}, body: 'not an object' }), false);
  });

  it('match with matches() as RE2 does, however many patterns come and go', () => {
    // A pattern taken from the event: more patterns than the compiled ones kept (src/runtime/re2.ts), and the same
    // patterns again after they were dropped, must all give RE2's own answer.
    const filter = compileFilter('body.text.matches(body.pattern)');
    const re2 = (pattern: string, text: string) => {
      try {
        return RE2JS.compile(pattern).test(text);
      } catch {
        return false; // a pattern RE2 refuses: the filter's evaluation error, which counts as false
      }
    };
    const chars = fc.constantFrom(...'ab.*+?|()[]^$\\');
    fc.assert(
      fc.property(
        fc.string({ unit: chars, maxLength: 8 }),
        fc.string({ unit: fc.constantFrom('a', 'b', '.'), maxLength: 8 }),
        (pattern, text) => {
          assert.equal(filter({ type: 't', headers: {}, body: { pattern, text } }), re2(pattern, text));
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe('durations', () => {
  it('every string the schema accepts is a duration CEL reads, as the API server rules need', () => {
    const schema = duration('test');
    const part = fc.tuple(fc.nat({ max: 100000 }), fc.constantFrom('ms', 's', 'm', 'h'));
    fc.assert(
      fc.property(fc.array(part, { minLength: 1, maxLength: 4 }), (parts) => {
        const text = parts.map(([n, unit]) => `${n}${unit}`).join('');
        assert.ok(schema.safeParse(text).success);
        assert.equal(run(`duration(d) >= duration('0s')`, { d: text }), true);
      }),
    );
  });

  it('refuses durations CEL cannot read', () => {
    for (const text of ['30 seconds', '1d', '-5s', '', 's', '1.5']) {
      assert.equal(duration('test').safeParse(text).success, false, text);
    }
  });
});
